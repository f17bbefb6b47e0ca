"""privkit.anon"""
