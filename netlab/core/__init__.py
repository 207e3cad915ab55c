"""The parts every layer shares: errors, the scenario file, the Lab, operations, the feature interface."""
