"""privkit.nn"""
