"""trustlab (public API re-exports are added once the sub-packages land)."""
