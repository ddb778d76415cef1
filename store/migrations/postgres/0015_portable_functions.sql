-- SQLite's functions that the statements use, for PostgreSQL (see docs/decisions.md, issue 24
-- stage 2), so that one text reads on both backends.

-- `json_each(list)` over a JSON array given as text: each element as text (`value`) with its
-- 0-based index (`key`). PostgreSQL's own `json_each(json)` walks objects; a text argument
-- picks this one. An element that is itself an array or object comes out as its JSON text.
CREATE FUNCTION json_each(list TEXT) RETURNS TABLE (key BIGINT, value TEXT)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ord - 1, CASE jsonb_typeof(v) WHEN 'string' THEN v #>> '{}' ELSE v::text END
    FROM jsonb_array_elements(list::jsonb) WITH ORDINALITY AS t(v, ord)
$$;

-- `instr(text, part)`: the 1-based position of `part` in `text`, 0 when absent; an integer,
-- as `substr` takes.
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT strpos(haystack, needle) $$;

-- `group_concat(value, separator)`: the non-NULL values joined, NULL when there are none.
CREATE FUNCTION group_concat_step(acc TEXT, value TEXT, separator TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN acc WHEN acc IS NULL THEN value
                ELSE acc || separator || value END
$$;
CREATE AGGREGATE group_concat(TEXT, TEXT) (SFUNC = group_concat_step, STYPE = TEXT);
