//! An in-memory CQL server (kassandra, the one the ScyllaDB store's tests use) that runs until
//! it is killed, for benchmarks that start several `otpd` processes against one shared store
//! (`scripts/cluster-bench.sh`). Not ScyllaDB: every request takes one lock, and every
//! connection is served on one thread.
//!
//! ```sh
//! cargo run --release --example cql_memory_server -- 127.0.0.1:9042   # default; :0 for any port
//! ```
//!
//! The first line on stdout is the address it listens on; point `OTPD_SCYLLA__CONTACT_POINTS`
//! at it (with `OTPD_SCYLLA__AWAIT_SCHEMA_AGREEMENT=false`: kassandra's system tables cannot
//! report schema versions). SIGTERM or SIGINT stops it.
//!
//! It serves requests exactly as `KassandraTester::in_scope` does (same session calls, same
//! answers), with two differences: it listens on the address it is given (the tester binds
//! `127.0.0.1:0` and hands the address to a closure), and it sets `TCP_NODELAY` on every
//! connection. The tester does not, and the driver pipelines requests on one connection: a
//! second answer written while the first is not yet acknowledged waits for the client's delayed
//! ACK (Nagle), ~40 ms on Linux, so a node on the tester's server spends ~44 ms in each
//! sequential request that makes two store calls. ScyllaDB sets `TCP_NODELAY`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use futures::{SinkExt, StreamExt};
use kassandra_tester::kassandra::KassandraSession;
use kassandra_tester::kassandra::error::DbError;
use kassandra_tester::kassandra::frame::request::Request;
use kassandra_tester::kassandra::frame::response::Response;
use kassandra_tester::kassandra::frame::response::error::Error;
use kassandra_tester::kassandra::frame::{request_stream, response_sink};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

type Session = Rc<RefCell<KassandraSession>>;

// One thread, like the tester's `LocalSet`: every request runs under the session's one lock.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9042".into()).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cql_memory_server: usage: cql_memory_server [ADDR:PORT] ({e})");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cql_memory_server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", listener.local_addr().expect("a bound address"));
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let session: Session = Rc::new(RefCell::new(KassandraSession::new()));
    let local = tokio::task::LocalSet::new();
    let serve = local.run_until(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(client(session.clone(), stream));
        }
    });
    tokio::select! {
        () = serve => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// One connection: frames in, answers out, in order (as `KassandraTester::client`).
async fn client(session: Session, mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut answers = response_sink(&mut write);
    while let Some(frame) = requests.next().await {
        let Ok((frame, opcode, data)) = frame else { break };
        let response = match Request::deserialize(opcode, &data, frame.flags) {
            Ok(request) => answer(&session, request),
            Err(_) => Response::Error(Error::new(DbError::ProtocolError, "Error parsing request")),
        };
        if answers.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}

fn answer(session: &Session, request: Request<'_>) -> Response {
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::AuthResponse => {
            return Response::Error(Error::new(DbError::ProtocolError, "authentication is not supported"));
        }
        Request::Query(query) => session.borrow_mut().process(query),
        Request::Prepare(prepare) => session.borrow_mut().prepare(prepare),
        Request::Execute(execute) => session.borrow_mut().execute(execute),
        Request::Batch(batch) => session.borrow_mut().process_batch(batch),
    };
    match result {
        Ok(result) => Response::Result(result),
        Err(error) => Response::Error(error),
    }
}
