"""The framework core: the plugin contract and the engine (plugin host, market data, strategy
runner, risk gate, executor, portfolio, trading state, health, healing, supervision, store)."""
