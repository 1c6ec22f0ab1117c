"""The catalogue: every method registers itself, with a card, where it is defined.

A :class:`Registry` maps a lower-case name to a :class:`Card`: the factory (a class or a
function), a one-line description, the paper it implements, the threat model or protocol, its
defaults and its typed parameters. Registration is a decorator at the definition::

    @EVASION.register("pgd", "projected gradient descent", paper="Madry et al. ICLR 2018",
                      threat="white-box, L-inf or L2", defaults={"steps": 20})
    class PGD(Attack): ...

The same factory may be registered under several names with other defaults (``pgd-cw`` is PGD
with the C&W margin loss). Parameters are read from the factory's signature and validated by
pydantic: :meth:`Card.validate` rejects unknown keys naming the allowed ones, and checks types.
Every lookup by name anywhere in trustlab (CLI, suites, bench, experiments, YAML) goes through
:meth:`Registry.get` or :meth:`Registry.build`; an unknown name raises
:class:`~trustlab.errors.InputError` listing the names that exist.

A registry knows the packages whose import fills it (``modules``); its first lookup imports
them, so a registry is never seen half-filled and this module imports nothing of trustlab above
it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab.errors import InputError

__all__ = [
    "BENCHMARKS",
    "BACKDOORS",
    "DATASETS",
    "DEFENSES",
    "DETECTORS",
    "EVASION",
    "EXPERIMENTS",
    "LOSSES",
    "MODELS",
    "PRIVACY_ATTACKS",
    "PRIVACY_DEFENSES",
    "REGISTRIES",
    "ROBUST",
    "SUITES",
    "Card",
    "Registry",
    "import_submodules",
    "load_all",
    "load_plugins",
]


def param_annotation(fn: Callable[..., Any], name: str) -> Any:
    """The type annotation of parameter ``name`` of ``fn`` (``Any`` where none resolves)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a forward reference that does not resolve: accept anything
        return Any
    return hints.get(name, Any)


def _signature_of(factory: Callable[..., Any]) -> tuple[Callable[..., Any], inspect.Signature]:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    if target is object.__init__:  # a class without a constructor of its own takes nothing
        return target, inspect.Signature([inspect.Parameter("self", 0)])
    return target, inspect.signature(target)


@dataclass(frozen=True)
class Card:
    """What the catalogue knows of one method.

    Attributes:
        name: the registered name (lower case).
        kind: the registry's kind, e.g. ``"evasion attack"``.
        factory: the class or function that builds it.
        description: one line for ``trustlab list`` and ``--help``.
        paper: the citation of the paper it implements ("" for plumbing, e.g. a dataset file).
        threat: the threat model or protocol it implements (e.g. ``"white-box, L-inf"``).
        defaults: the keyword arguments this name fixes (e.g. ``pgd``: ``{"steps": 20}``);
            together with the factory's own defaults they are :meth:`parameters`.
        inputs: the factory's leading arguments that are not settings (e.g. ``("model",)``):
            :meth:`build` takes them positionally and :meth:`validate` refuses them as keys.
        meta: free-form facts (a dataset's shape, a model's kind, a suite's attacks, ...).

    Example::

        card = EVASION.get("pgd")  # its registered defaults: 20 steps, CE
        atk = card.build(model, eps=8 / 255)
    """

    name: str
    kind: str
    factory: Callable[..., Any]
    description: str = ""
    paper: str = ""
    threat: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    # -- parameters ------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Every setting the method takes with its default (``inspect.Parameter.empty`` where
        the factory has none), the registered ``defaults`` overriding the factory's."""
        _, sig = _signature_of(self.factory)
        out: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.name in ("self", *self.inputs) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = p.default
        for k, v in self.defaults.items():
            out[k] = v
        return out

    def accepts_any(self) -> bool:
        """True when the factory takes ``**kwargs`` (its own code checks the rest)."""
        _, sig = _signature_of(self.factory)
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    def params_model(self) -> type:
        """The pydantic model of :meth:`parameters` (types from the factory's annotations)."""
        cached = _PARAM_MODELS.get(id(self))
        if cached is not None and cached[0] is self:
            return cached[1]
        import pydantic

        target, _ = _signature_of(self.factory)
        fields: dict[str, Any] = {}
        for name, default in self.parameters().items():
            ann = param_annotation(target, name)
            fields[name] = (ann, ... if default is inspect.Parameter.empty else default)
        extra = "allow" if self.accepts_any() else "forbid"
        config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra=extra)
        model_name = "".join(w.capitalize() for w in self.name.replace("+", "-").split("-"))
        out = pydantic.create_model(f"{model_name}Params", __config__=config, **fields)
        _PARAM_MODELS[id(self)] = (self, out)
        return out

    def validate(self, params: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """The keyword arguments for the factory: ``defaults`` updated by ``params`` and ``kw``,
        checked by pydantic. Unknown keys and wrong types raise :class:`InputError` naming the
        allowed keys. Values are passed on as given (pydantic checks them; it does not convert
        them), so what the factory receives is exactly what the caller wrote."""
        import pydantic

        given = {**dict(params or {}), **kw}
        allowed = self.parameters()
        unknown = [k for k in given if k not in allowed]
        if unknown and not self.accepts_any():
            raise InputError(
                f"{self.kind} {self.name!r} has no parameter {unknown[0]!r}; it takes: "
                f"{', '.join(allowed) or 'no parameters'}."
            )
        try:
            self.params_model().model_validate({**self._given_defaults(), **given})
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "parameters"
            raise InputError(
                f"{self.kind} {self.name!r}: parameter {where!r}: {err['msg']} "
                f"(got {err.get('input')!r})."
            ) from None
        return {**dict(self.defaults), **given}

    def _given_defaults(self) -> dict[str, Any]:
        return {k: v for k, v in self.parameters().items() if v is not inspect.Parameter.empty}

    def build(self, *inputs: Any, **params: Any) -> Any:
        """``factory(*inputs, **validate(params))``: the method with its registered defaults."""
        return self.factory(*inputs, **self.validate(params))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (``trustlab list --json``)."""
        params = {
            k: (None if v is inspect.Parameter.empty else v) for k, v in self.parameters().items()
        }
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "paper": self.paper,
            "threat": self.threat,
            "defaults": {k: _plain(v) for k, v in params.items()},
            "meta": {k: _plain(v) for k, v in self.meta.items()},
        }


_PARAM_MODELS: dict[int, tuple[Card, type]] = {}


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, Sequence):
        return [_plain(x) for x in v]
    if callable(v) and hasattr(v, "__qualname__"):  # a class or a function: a stable name
        return f"{v.__module__}.{v.__qualname__}"
    return repr(v)


#: the entry-point group of plug-ins: a distribution that declares
#: ``[project.entry-points."trustlab.plugins"] mine = "my_package.attacks"`` has that module
#: imported (and so its decorators run) when a registry is first read
PLUGIN_GROUP = "trustlab.plugins"
_PLUGINS_LOADED = False


def import_submodules(package: str) -> None:
    """Import ``package`` and, if it is a package, every module below it (sorted by name)."""
    import pkgutil

    mod = importlib.import_module(package)
    path = getattr(mod, "__path__", None)
    if path is None:
        return
    for info in sorted(pkgutil.walk_packages(path, prefix=f"{package}."), key=lambda i: i.name):
        importlib.import_module(info.name)


def load_plugins() -> None:
    """Import the modules that installed distributions declare under :data:`PLUGIN_GROUP`."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        importlib.import_module(ep.value.split(":")[0])


class Registry:
    """A named collection of :class:`Card`, e.g. :data:`EVASION` or :data:`MODELS`.

    Args:
        kind: what it holds, in words (``"evasion attack"``); used in messages.
        modules: the packages whose import registers its entries (imported on first lookup).
        inputs: the leading factory arguments that are not settings (``("model",)``).

    Example::

        atk = EVASION.build("pgd", model, eps=8 / 255)  # EVASION is a Registry
        EVASION.names(transfer=True)  # the names whose card's meta says transfer=True
    """

    def __init__(self, kind: str, modules: Sequence[str] = (), inputs: Sequence[str] = ()) -> None:
        self.kind = kind
        self.modules = tuple(modules)
        self.inputs = tuple(inputs)
        self._entries: dict[str, Card] = {}
        self._loaded = not self.modules

    def register(
        self,
        name: str,
        description: str = "",
        *,
        paper: str = "",
        threat: str = "",
        defaults: Mapping[str, Any] | None = None,
        inputs: Sequence[str] | None = None,
        **meta: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@MODELS.register("resnet20", "CIFAR ResNet-20")``; returns the factory
        unchanged, so registrations stack (one class under several names)."""
        key = name.lower()

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Card(
                key,
                self.kind,
                factory,
                description,
                paper,
                threat,
                dict(defaults or {}),
                tuple(self.inputs if inputs is None else inputs),
                dict(meta),
            )
            return factory

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and plug-ins that register temporarily)."""
        self._entries.pop(name.lower(), None)

    def load(self) -> Registry:
        """Import the packages that fill this registry, every module in them (so a new file
        with a decorator is registered with no other edit), and the installed plug-ins (once)."""
        if not self._loaded:
            self._loaded = True
            for mod in self.modules:
                import_submodules(mod)
            load_plugins()
        return self

    def get(self, name: str) -> Card:
        self.load()
        key = str(name).lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}."
            )
        return self._entries[key]

    def build(self, name: str, *inputs: Any, **params: Any) -> Any:
        """``get(name).build(*inputs, **params)``."""
        return self.get(name).build(*inputs, **params)

    def registered(self) -> list[str]:
        """The names registered so far, without importing anything (for a module that reads
        its own registrations while it is being imported)."""
        return list(self._entries)

    def names(self, **where: Any) -> list[str]:
        """The registered names in registration order; ``where`` filters on ``meta`` entries
        (``BACKDOORS.names(injector="data")``)."""
        self.load()
        return [
            k for k, c in self._entries.items() if all(c.meta.get(m) == v for m, v in where.items())
        ]

    def check(self, names: Sequence[str]) -> list[str]:
        """``names`` lower-cased, each checked to be registered (one error naming the first
        unknown one and the registered ones)."""
        return [self.get(n).name for n in names]

    def __contains__(self, name: object) -> bool:
        self.load()
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[Card]:
        self.load()
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


DATASETS = Registry("dataset", ["trustlab.data"], inputs=("split",))
MODELS = Registry("model", ["trustlab.models"], inputs=())
LOSSES = Registry("loss", ["trustlab.train.losses"], inputs=())
EVASION = Registry("evasion attack", ["trustlab.attacks.evasion"], inputs=("model",))
SUITES = Registry("attack suite", ["trustlab.attacks.evasion"], inputs=("model",))
BACKDOORS = Registry("backdoor attack", ["trustlab.attacks.backdoor"], inputs=())
PRIVACY_ATTACKS = Registry("privacy attack", ["trustlab.attacks.privacy"], inputs=())
ROBUST = Registry("adversarial training", ["trustlab.robust"], inputs=())
DEFENSES = Registry("backdoor defense", ["trustlab.defenses.backdoor"], inputs=())
DETECTORS = Registry("detector", ["trustlab.defenses.detection"], inputs=("model",))
PRIVACY_DEFENSES = Registry("privacy defense", ["trustlab.defenses.privacy"], inputs=())
EXPERIMENTS = Registry("experiment", ["trustlab.experiments"], inputs=())
#: the platform's versioned benchmarks (``trustlab benchmarks``); a card's factory returns the
#: :class:`~trustlab.platform.benchmarks.Benchmark`
BENCHMARKS = Registry("benchmark", ["trustlab.platform.benchmarks"], inputs=())

#: every registry by the word ``trustlab list KIND`` takes
REGISTRIES: dict[str, Registry] = {
    "datasets": DATASETS,
    "models": MODELS,
    "losses": LOSSES,
    "evasion": EVASION,
    "suites": SUITES,
    "backdoors": BACKDOORS,
    "privacy-attacks": PRIVACY_ATTACKS,
    "adversarial-training": ROBUST,
    "defenses": DEFENSES,
    "detectors": DETECTORS,
    "privacy-defenses": PRIVACY_DEFENSES,
    "experiments": EXPERIMENTS,
    "benchmarks": BENCHMARKS,
}


def load_all() -> dict[str, Registry]:
    """Import every package that registers methods; returns :data:`REGISTRIES`."""
    for reg in REGISTRIES.values():
        reg.load()
    return REGISTRIES
