"""The fault matrix (issue 7): each file injects one family of faults for real, against
real servers the fixtures start, stop and restart, and checks that nothing is lost, run
more often than allowed, or left running. The README's "What survives what" table names
the test that proves each row."""
