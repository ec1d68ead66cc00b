//! Compatibility levels (global and per subject) and the registry's mode.
//!
//! Invariant: a level or mode is changed only by a durable record of the log, answered once
//! that record is applied.

use common::sync::LockExt;

use super::{Error, Registry, Result, check_subject};
use crate::record::{Compatibility, ConfigValue, Mode, ModeValue, Record};

impl Registry {
    /// `GET /config[/{s}]`: the level set (`subject: None` is the global one, BACKWARD unless
    /// set). With `default_to_global`, a subject without its own level gets the global one.
    pub fn get_config(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Compatibility> {
        let st = self.read_state()?;
        match subject {
            None => Ok(st.index.config(None).unwrap_or_default()),
            Some(s) => match st.index.config(Some(s)) {
                Some(c) => Ok(c),
                None if default_to_global => Ok(st.index.config(None).unwrap_or_default()),
                None => Err(Error::SubjectConfigNotFound(s.to_owned())),
            },
        }
    }

    /// `PUT /config[/{s}]`.
    pub async fn set_config(&self, subject: Option<&str>, level: Compatibility) -> Result<()> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let _w = self.begin_write().await?;
        self.write(Record::Config {
            subject: subject.map(str::to_owned),
            value: Some(ConfigValue {
                compatibility_level: level,
            }),
        })
        .await?;
        tracing::info!(subject, %level, "compatibility level set");
        Ok(())
    }

    /// `DELETE /config[/{s}]`: removes the level; returns the one removed.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<Compatibility> {
        let _w = self.begin_write().await?;
        let previous = {
            let st = self.state.read_or_abort();
            match (subject, st.index.config(subject)) {
                (_, Some(c)) => c,
                (None, None) => Compatibility::default(),
                (Some(s), None) => {
                    if st.index.versions(s).is_none() {
                        return Err(Error::SubjectNotFound(s.to_owned()));
                    }
                    return Err(Error::SubjectConfigNotFound(s.to_owned()));
                }
            }
        };
        self.write(Record::Config {
            subject: subject.map(str::to_owned),
            value: None,
        })
        .await?;
        Ok(previous)
    }

    /// `GET /mode`.
    pub fn get_mode(&self) -> Result<Mode> {
        Ok(self.read_state()?.index.effective_mode(None))
    }

    /// `PUT /mode`.
    pub async fn set_mode(&self, mode: Mode) -> Result<()> {
        let _w = self.begin_write().await?;
        self.write(Record::Mode {
            subject: None,
            value: Some(ModeValue { mode }),
        })
        .await?;
        tracing::info!(?mode, "mode set");
        Ok(())
    }
}
