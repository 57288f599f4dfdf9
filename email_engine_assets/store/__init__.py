"""Set-based SQL for the application tables: each module holds the statements of one table group."""
