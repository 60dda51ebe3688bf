"""tradebot-hello: one example plugin of every kind, written against :mod:`tradebot.api` only.

Each module is its own plugin (its own entry point in ``pyproject.toml``), so a user enables
exactly the ones they want:

=================  ===========================  ===========================================
plugin             kind                         what it does
=================  ===========================  ===========================================
``hello-market``   exchange                     a made-up market on this machine: a random
                                                walk of prices, fills, balances in a file
``hello-momentum`` strategy                     buys after N rising prices, sells after N
                                                falling ones
``hello-check``    check                        ok once the bot has seen ``min_ticks``
                                                market updates
``hello-pause``    recovery action              waits a moment on a transient fault
``hello-hold``     HALT position policy         keeps positions, reports them with equity
``hello-file``     notifier                     appends every notification to a JSON-lines
                                                file
``hello-audit``    lifecycle hooks only         writes an audit trail of start, stop, state
                                                changes and fills, with its own
                                                ``[plugins.hello-audit]`` table
=================  ===========================  ===========================================
"""

__all__: list[str] = []
