-- The `declarations` table of the first schema was never written: Declaration documents are
-- translated in the loop and cached in `translation_cache`, and API requests are kept in
-- `declaration_requests` (0003). Dropped so the schema holds only what the code uses.
DROP TABLE IF EXISTS declarations;
