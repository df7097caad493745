"""The stage runners: each reads its inputs from the run directory, does one step of the loop
and writes its outputs (and a manifest) back. The libraries they drive live one layer down."""
