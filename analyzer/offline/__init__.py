"""Work on rollouts that are not running: Monte Carlo simulation, tuning, backtests, export,
reports."""
