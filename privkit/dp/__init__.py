"""privkit.dp"""
