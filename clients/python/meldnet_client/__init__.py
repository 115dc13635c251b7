"""A Python client of a meldnet federation, written from PROTOCOL.md: a
police agency's (or regulator's, or victims' representative's) inbox that
verifies every delivery from public keys only, stores it before it
acknowledges it, refuses what fails, and resumes; and a hosting provider's
hash check at its node. Stubs come from `proto/` by Google's protoc
(`python3 -m meldnet_client.generate`)."""
