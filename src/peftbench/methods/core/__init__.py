"""What every method shares: the registry (``MethodSpec``), budget matching, fp32 trainables over a half-precision
base, peft wrapping, the bottleneck adapters' sites, the LoRA family's rank options, and the methods table."""
