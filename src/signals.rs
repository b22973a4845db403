//! SIGINT and SIGTERM, listened for before a server prints its address: a supervisor or a script
//! that stops it at once must get a graceful stop, not the default disposition's kill.

pub enum StopSignals {
    #[cfg(unix)]
    Unix {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    #[cfg(not(unix))]
    CtrlC,
    /// Not listening: taken, or the OS refused.
    None,
}

impl StopSignals {
    /// Installs the handlers now; needs a running Tokio runtime.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Self::Unix { term, int },
                _ => {
                    tracing::error!(
                        "cannot listen for SIGTERM and SIGINT; stop the process another way"
                    );
                    Self::None
                }
            }
        }
        #[cfg(not(unix))]
        Self::CtrlC
    }

    /// Waits for the first signal; `false` (at once) if nothing is listened for.
    pub async fn received(self) -> bool {
        match self {
            #[cfg(unix)]
            Self::Unix { mut term, mut int } => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
                _ = int.recv() => tracing::info!("SIGINT received; stopping"),
            },
            #[cfg(not(unix))]
            Self::CtrlC => {
                if tokio::signal::ctrl_c().await.is_err() {
                    return false;
                }
            }
            Self::None => return false,
        }
        true
    }
}
