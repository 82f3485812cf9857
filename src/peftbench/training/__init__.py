"""peftbench.training"""
