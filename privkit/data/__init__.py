"""privkit.data"""
