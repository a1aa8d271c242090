"""hitgan benchmarks: ``python -m bench`` runs the suite; each module also runs on its own."""
