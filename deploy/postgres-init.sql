-- Run once by the postgres image on an empty volume (docker-entrypoint-initdb.d).
-- Two roles: the OWNER runs migrations and owns every table; the APP role is what the
-- servers connect as. The app role is neither superuser nor BYPASSRLS and owns nothing,
-- so row-level security binds every query it makes. Change both passwords (and the URLs
-- in docker-compose.yml) before exposing this anywhere.
CREATE ROLE edgedesk_owner LOGIN PASSWORD 'change-me-owner';
CREATE ROLE edgedesk_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'change-me-app';
CREATE DATABASE edgedesk OWNER edgedesk_owner;
