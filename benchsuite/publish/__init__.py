"""Publishing the catalogue for people and tools: OSV records (``osv``) and a static site (``site``)."""
