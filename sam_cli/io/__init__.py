"""Reading images and writing results."""
