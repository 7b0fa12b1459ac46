"""Code shared by the script-mode and BYOC training programs (shipped inside both)."""
