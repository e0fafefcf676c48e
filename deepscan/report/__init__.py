"""Reports out: JSON (and HTML) scan reports."""
