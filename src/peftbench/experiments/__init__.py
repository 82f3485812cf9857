"""peftbench.experiments"""
