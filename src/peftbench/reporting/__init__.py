"""``peftbench report``: finished runs read back, analysed (``analysis``, ``significance``), drawn (``plots``) and
described once (``model``), then laid out as Markdown (``markdown``) and one HTML page (``html``) by ``build``.
Reads run directories only: it imports neither the methods nor the training."""
