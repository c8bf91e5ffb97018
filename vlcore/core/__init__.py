"""The component contract, the lowest layer: the :class:`~vlcore.core.component.Component` base,
the table of kinds, the hook specifications, the plugin host (registry), the strict config builder,
the progress callback and the user errors.  It imports nothing else of vlcore."""
