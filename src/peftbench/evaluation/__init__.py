"""peftbench.evaluation"""
