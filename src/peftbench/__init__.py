"""peftbench: which parameter-efficient fine-tuning method should I use to instruction-tune a model?"""

__version__ = "0.1.0"
