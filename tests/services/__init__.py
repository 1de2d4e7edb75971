"""Throwaway backing services (SeaweedFS, PostgreSQL) started by the tests on free loopback
ports, in temporary folders, and stopped afterwards."""
