"""Run orchestration: a run's plan, its worker fleet, its monitoring and verdict, and its report."""
