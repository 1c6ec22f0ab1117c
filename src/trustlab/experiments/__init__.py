"""Reproductions: one module per paper, each registering its experiment in
:data:`trustlab.registry.EXPERIMENTS` where the class is defined (``@register_experiment``).

Importing this package imports every reproduction module, which is how the registry is filled;
:mod:`trustlab.experiments.base` holds the machinery (presets, jobs, tables, claims) and imports
none of them.
"""

from trustlab.experiments import (  # noqa: F401  (each module registers its reproductions)
    advtrojan,
    backdoor_breadth,
    backdoors,
    bench_backdoor,
    camouflage,
    imbalanced_gradients,
    inpainting,
    medical,
    meminf,
    noisy_labels,
    refool,
    transferability,
    video_backdoor,
)
