"""Our config mapped onto olmo-core objects."""
