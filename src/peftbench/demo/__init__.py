"""``peftbench demo``: the whole study in miniature on generated data (:mod:`peftbench.demo.runner`).

Its data come from :mod:`peftbench.demodata`, which the run recipe reads for ``data.data_dir: "@demo"`` too.
"""
