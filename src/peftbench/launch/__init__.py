"""Starting runs: named presets (``presets``, shipped in ``peftbench/configs``), sweeps over them (``sweep``), the
local and Slurm launchers (``launchers``), the checks before any process starts (``preflight``) and
``peftbench status`` (``status``)."""
