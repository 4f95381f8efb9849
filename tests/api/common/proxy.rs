//! A TCP proxy that a test can cut and restore, to put the database or Segment
//! out of reach the way a network or a restart does: open connections are
//! broken and new ones refused, then everything works again on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Arc<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(TcpProxy { addr: listener.local_addr().unwrap(), target, running: Mutex::new(None) });
        proxy.serve(listener);
        proxy
    }

    /// Breaks every open connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(task) = self.running.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Accepts connections again, on the same address.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("the proxy's port is free again");
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        // Aborting this task drops the listener and, with the JoinSet, every pipe.
        let task = tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                pipes.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        *self.running.lock().unwrap() = Some(task);
    }
}
