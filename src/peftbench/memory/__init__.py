"""What a run costs in memory: measured while it runs (``measure``) and planned from shapes alone, before it runs
(``plan``: the model on the meta device under ``FakeTensorMode``, one training and one generation step)."""
