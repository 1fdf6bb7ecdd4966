//! Integration tests: a real gateway, a private Redis per test, real HTTP.
//! One test binary (modules below) keeps link time down.

mod support;

mod admin_listener;
mod chaos;
mod cli;
mod crosscheck;
mod dashboard;
mod dead_letters;
mod delivery;
mod flow_control;
mod health;
mod hostile;
mod ingest;
mod lifecycle;
mod local_resources;
mod ordered;
mod proxy;
mod receiver;
mod recovery;
mod redis_failover;
mod redis_modes;
mod redis_settings;
mod secrets;
mod topology;
mod visibility;
