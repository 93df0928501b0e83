"""Data sets: the book's thermometer readings, scikit-learn digits, CIFAR-10 from local files."""
