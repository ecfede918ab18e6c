"""The pure core: samples in, decisions out. No I/O, no clock (time is passed in).

stats/ holds the sequential tests, judge.py combines them into one decision per tick, rollout.py
is the state machine of steps, gates and manual commands. import-linter (`make lint`) keeps this
package free of sources, routers, the daemon, the demo and the CLI.
"""
