"""Tables, the order state machine and the database engine."""
