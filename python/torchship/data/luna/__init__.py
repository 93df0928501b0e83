"""Part 2 data: LUNA16 CT scans (chapters 9-14) and generated scans in the same layout."""
