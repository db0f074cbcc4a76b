"""Model references: parsing (ref), resolution to local files and content hashes (resolve), endpoint identity (fingerprint)."""
