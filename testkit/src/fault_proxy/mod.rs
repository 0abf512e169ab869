//! A fault-injecting HTTP proxy in front of moto: the AWS endpoint of the
//! tests that need AWS to fail as moto never does.
//!
//! moto cannot run out of capacity, throttle, or lose an answer. The proxy
//! listens on `127.0.0.1` only, forwards only to the one moto it was started
//! in front of (also on `127.0.0.1`), and per call can:
//! - answer an AWS error (`InsufficientInstanceCapacity`, `RequestLimitExceeded`,
//!   `ServiceUnavailable`, ...) in the XML shape of the EC2 or ELB query API,
//!   or in DynamoDB's JSON (`ProvisionedThroughputExceededException`),
//!   or a bare HTTP 500/503 with no error code ([`Fault`]);
//! - do so *after* moto executed the call, so the call took effect but its
//!   answer is lost ([`Fault::after_execution`]);
//! - replay the answer of a RunInstances whose `ClientToken` it has seen, as
//!   EC2 does and moto does not ([`FaultProxy::replay_client_tokens`], on by default);
//! - log every call (action, client token, instance ids, status) so tests can count them
//!   ([`FaultProxy::calls`], [`FaultProxy::count`]).
//!
//! It runs on its own thread and tokio runtime, so it serves whatever runtime
//! (or none) the test uses, and stops when dropped.

mod fault;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use fault::{error_body, status_page, Answer, Times};
pub use fault::{Call, Fault};

use crate::moto::MotoServer;

/// The proxy: see the [module docs](self). Stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    faults: Vec<Fault>,
    calls: Vec<Call>,
    replay: bool,
    /// RunInstances answers moto gave, by ClientToken, with the parameters they were for.
    answers: HashMap<String, Remembered>,
}

#[derive(Debug, Clone)]
struct Remembered {
    params: Vec<(String, String)>,
    status: u16,
    body: Bytes,
}

impl FaultProxy {
    /// Starts a proxy in front of `moto`, on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no loopback port can be bound or the thread cannot start (a test harness).
    pub fn start(moto: &MotoServer) -> Self {
        Self::in_front_of(moto.port())
    }

    /// Starts a proxy in front of whatever listens on `127.0.0.1:port`; it
    /// forwards to nothing else.
    ///
    /// # Panics
    /// As [`FaultProxy::start`].
    pub fn in_front_of(port: u16) -> Self {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a loopback port for the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let shared = Arc::new(Mutex::new(State {
            faults: Vec::new(),
            calls: Vec::new(),
            replay: true,
            answers: HashMap::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || serve(listener, upstream, state, stopped))
            .expect("start the fault proxy's thread");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give the SDK (`http://127.0.0.1:PORT`).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a fault; faults are tried in the order they were added, and the
    /// first that matches a call answers it.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Removes every fault still armed.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Whether a RunInstances with a ClientToken seen before gets the first
    /// answer again instead of reaching moto (on by default, as EC2 does; moto
    /// never does). A token seen with other parameters gets EC2's
    /// `IdempotentParameterMismatch`. Turn it off to test how a client copes
    /// with a server that ignores the token.
    pub fn replay_client_tokens(&self, on: bool) {
        self.state().replay = on;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// How many calls of `action` reached the proxy (whatever their answer).
    pub fn count(&self, action: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.action == action)
            .count()
    }

    /// How many calls of `action` moto executed.
    pub fn executed(&self, action: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.action == action && c.executed)
            .count()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: StdListener,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("the fault proxy's runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("a tokio listener for the proxy");
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                _ = &mut stopped => return,
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(req, upstream, &state).await) }
                });
                // A connection the client dropped is no concern of the test's.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What a call asks for, read from its query-API form body.
struct Asked {
    service: String,
    action: String,
    version: Option<String>,
    client_token: Option<String>,
    params: Vec<(String, String)>,
}

impl Asked {
    /// The instance ids the call names, in the query APIs' list shapes.
    fn instance_ids(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| {
                (k.starts_with("InstanceId.")
                    || (k.starts_with("Targets.member.") && k.ends_with(".Id"))
                    || (k.starts_with("Instances.member.") && k.ends_with(".InstanceId")))
                    && !k.starts_with("Filter")
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn read(parts: &hyper::http::request::Parts, body: &[u8]) -> Self {
        let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        if let Some(query) = parts.uri.query() {
            params.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // SigV4: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
        let service = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("unknown")
            .to_owned();
        // The JSON protocols (DynamoDB) name the operation in a header:
        // `X-Amz-Target: DynamoDB_20120810.UpdateItem`.
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .map(str::to_owned);
        Self {
            service,
            action: get("Action").or(target).unwrap_or_default(),
            version: get("Version"),
            client_token: get("ClientToken"),
            params,
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(400, "could not read the request body"),
    };
    let asked = Asked::read(&parts, &body);
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };

    let fault = take_fault(&mut lock(), &asked);
    let mut call = Call {
        service: asked.service.clone(),
        action: asked.action.clone(),
        client_token: asked.client_token.clone(),
        status: 0,
        executed: false,
        injected: false,
        replayed: false,
        instance_ids: asked.instance_ids(),
    };
    let respond = |call: Call, response: Response<Full<Bytes>>| {
        let mut call = call;
        call.status = response.status().as_u16();
        lock().calls.push(call);
        response
    };

    if let Some(f) = fault.as_ref().filter(|f| !f.after_execution) {
        call.injected = true;
        return respond(call, answer(&asked, &f.answer));
    }
    // EC2 keeps a RunInstances answer by ClientToken and gives it again
    // (moto does not): the same parameters get it, others a mismatch.
    let remembered = match (&asked.client_token, asked.action.as_str()) {
        (Some(token), "RunInstances") => {
            let s = lock();
            s.replay.then(|| s.answers.get(token).cloned()).flatten()
        }
        _ => None,
    };
    if let Some(r) = remembered {
        call.replayed = true;
        let response = if same_launch(&r.params, &asked.params) {
            xml(r.status, r.body)
        } else {
            answer(
                &asked,
                &Answer::Error {
                    code: "IdempotentParameterMismatch".into(),
                    message: "The client token was used before with other parameters.".into(),
                    status: 400,
                },
            )
        };
        return respond(call, response);
    }

    let forwarded = forward(parts, body, upstream).await;
    let (status, headers, body) = match forwarded {
        Ok(r) => r,
        Err(e) => return respond(call, plain(502, &format!("moto did not answer: {e}"))),
    };
    call.executed = true;
    if let (Some(token), "RunInstances", 200..=299) =
        (&asked.client_token, asked.action.as_str(), status)
    {
        lock().answers.entry(token.clone()).or_insert(Remembered {
            params: asked.params.clone(),
            status,
            body: body.clone(),
        });
    }
    if let Some(f) = fault {
        // The call took effect; its answer is lost.
        call.injected = true;
        return respond(call, answer(&asked, &f.answer));
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (name, value) in headers.iter() {
        if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    respond(call, response)
}

/// Takes the first armed fault matching the call (counting it down).
fn take_fault(state: &mut State, asked: &Asked) -> Option<Fault> {
    let i = state
        .faults
        .iter()
        .position(|f| f.matches(&asked.action, &asked.params))?;
    let fault = state.faults[i].clone();
    match &mut state.faults[i].times {
        Times::Always => {}
        Times::Next(n) if *n <= 1 => {
            state.faults.remove(i);
        }
        Times::Next(n) => *n -= 1,
    }
    Some(fault)
}

/// Whether two RunInstances ask for the same launch: the same parameters, in
/// any order (the signature, which the SDK renews on every attempt, is a header).
fn same_launch(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let norm = |p: &[(String, String)]| {
        let mut p: Vec<(String, String)> = p.to_vec();
        p.sort();
        p
    };
    norm(a) == norm(b)
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> Result<(u16, hyper::HeaderMap, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::from_parts(parts, Full::new(body));
    request.headers_mut().remove(hyper::header::CONNECTION);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((status, parts.headers, body))
}

fn answer(asked: &Asked, a: &Answer) -> Response<Full<Bytes>> {
    match a {
        Answer::Error {
            code,
            message,
            status,
        } if asked.service == "dynamodb" => {
            // DynamoDB answers throttling with HTTP 400 and the code in JSON.
            let mut r = with_status(
                *status,
                Bytes::from(error_body(&asked.service, None, code, message)),
            );
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            r
        }
        Answer::Error {
            code,
            message,
            status,
        } => xml(
            *status,
            Bytes::from(error_body(
                &asked.service,
                asked.version.as_deref(),
                code,
                message,
            )),
        ),
        Answer::Body(body) => xml(200, Bytes::from(body.clone())),
        Answer::Status(status) => {
            let mut r = with_status(*status, Bytes::from(status_page(*status)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    }
}

fn xml(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = with_status(status, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    r
}

fn plain(status: u16, text: &str) -> Response<Full<Bytes>> {
    with_status(status, Bytes::from(text.to_owned()))
}

fn with_status(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
