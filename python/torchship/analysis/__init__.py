"""Chapter 14: CT scan -> segmentation -> grouping -> nodule and malignancy classification -> diagnosis."""
