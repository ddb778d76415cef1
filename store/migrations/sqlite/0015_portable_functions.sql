-- Nothing to do on SQLite: `json_each`, `instr` and `group_concat` are its own functions.
-- PostgreSQL's twin of this migration defines them there, so that the statements read the
-- same on both backends (see docs/decisions.md, issue 24 stage 2).
SELECT 1;
