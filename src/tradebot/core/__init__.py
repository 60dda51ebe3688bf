"""The framework core: contract, plugin manager, config, engine, state, resilience."""
