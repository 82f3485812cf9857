"""peftbench.data"""
