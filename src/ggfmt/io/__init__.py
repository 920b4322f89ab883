"""What ggfmt does with the machine: inputs and outputs, payload bytes, the standard streams, text shown
safely, the data folders, and failures of the environment."""
