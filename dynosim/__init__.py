"""dynosim: a discrete-event twin of the Dynamo LLM serving stack."""
