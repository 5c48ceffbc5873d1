//! In-process targets shared by the parity and differential tests: the
//! router called directly, and the `api` handler through lambda_http's own
//! adapter for each AWS event shape.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use http_body_util::BodyExt;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service as _, ServiceExt as _};
use lambda_http::{Adapter, Context, LambdaEvent};
use twincell_contract::case::{Answer, HttpRequest};
use twincell_contract::lambda_events::{self, Shape};
use twincell_contract::target::{BoxFuture, FIXED_CLOCK_MS, Session, Target, TargetAuth};
use twincell_core::testing::{ManualClock, SequentialIds};
use twincell_core::{CellId, InMemoryEventStore, Service, Timestamp, Topology};

/// The cell every local target is.
pub const CELL: &str = "aws";
/// Its peer.
pub const PEER: &str = "azure";

type Svc = Service<InMemoryEventStore, ManualClock, SequentialIds>;

/// The replication routes as every local target has them; with `auth`,
/// accepting Event Grid's Entra tokens when its settings say so.
pub fn replication(
    auth: Option<(&TargetAuth, &Arc<twincell_http::auth::Authenticator>)>,
) -> Option<twincell_http::Replication> {
    let delivery_tokens = auth.and_then(|(settings, authenticator)| {
        twincell_http::auth::delivery_tokens_from_env(
            |name| lookup(settings, name),
            Some(authenticator),
        )
        .unwrap()
    });
    Some(twincell_http::Replication {
        key: twincell_replication::Secret::new(twincell_contract::target::REPLICATION_KEY).unwrap(),
        publisher: None,
        delivery_tokens,
        origin_keys: twincell_replication::signing::OriginKeys::default().with(
            &twincell_core::CellId::new(PEER).unwrap(),
            twincell_contract::target::PEER_SIGNER.as_ref().unwrap(),
        ),
    })
}

fn lookup(auth: &TargetAuth, name: &str) -> Option<String> {
    auth.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A fresh in-memory service with the frozen clock.
pub fn service() -> Arc<Svc> {
    let topology = Topology::new(CellId::new(CELL).unwrap(), [CellId::new(PEER).unwrap()]);
    Arc::new(Service::new(
        topology,
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::from_unix_millis(FIXED_CLOCK_MS).unwrap(), 0),
        SequentialIds::default(),
    ))
}

/// The test identity provider, and what a target needs to check its
/// tokens.
pub async fn identity_provider() -> (twincell_http::auth::testing::IdentityProvider, TargetAuth) {
    let idp = twincell_http::auth::testing::IdentityProvider::start()
        .await
        .unwrap();
    let attacker = idp.attacker_url();
    let auth = TargetAuth {
        env: idp
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        mint: Arc::new(move |name| twincell_http::auth::testing::token(name, &attacker)),
    };
    (idp, auth)
}

/// The authenticator an in-process target runs with, keys fetched.
async fn authenticator(
    auth: Option<&TargetAuth>,
) -> Result<Option<Arc<twincell_http::auth::Authenticator>>, String> {
    let Some(auth) = auth else {
        return Ok(None);
    };
    let authenticator = twincell_http::auth::from_env(|name| lookup(auth, name))?;
    if let Some(a) = &authenticator {
        a.warm_up().await;
    }
    Ok(authenticator)
}

/// The shared router, called in-process; with auth, checking tokens.
pub struct InProcessRouter(pub Option<TargetAuth>);

struct RouterSession(axum::Router);

/// A case request as an `http::Request`.
pub fn to_http(request: &HttpRequest) -> http::Request<axum::body::Body> {
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(&request.path);
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .header("content-length", request.body.len())
        .body(axum::body::Body::from(request.body.clone()))
        .unwrap()
}

/// An `http::Response` as an answer.
pub async fn from_http(response: http::Response<axum::body::Body>) -> Answer {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

impl Session for RouterSession {
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(self.0.clone(), to_http(request))
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok(from_http(response).await)
        })
    }
}

impl Target for InProcessRouter {
    fn auth(&self) -> Option<&TargetAuth> {
        self.0.as_ref()
    }
    fn replication_key(&self) -> Option<&str> {
        Some(twincell_contract::target::REPLICATION_KEY)
    }
    fn peer_signer(&self) -> Option<&twincell_replication::signing::Signer> {
        twincell_contract::target::PEER_SIGNER.as_ref()
    }
    fn name(&self) -> &str {
        "router"
    }
    fn cell(&self) -> &str {
        CELL
    }
    fn peer(&self) -> &str {
        PEER
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async {
            let auth = authenticator(self.0.as_ref()).await?;
            let replication = replication(self.0.as_ref().zip(auth.as_ref()));
            let session: Box<dyn Session> = Box::new(RouterSession(twincell_http::router_with(
                service(),
                replication,
                auth,
            )));
            Ok(session)
        })
    }
}

/// The `api` handler in-process, through lambda_http's own adapter; with
/// auth, checking tokens.
pub struct InProcessLambda(pub Shape, pub Option<TargetAuth>);

struct LambdaSession(Shape, twincell_aws::App);

impl Session for LambdaSession {
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>> {
        let event = lambda_events::event(self.0, request);
        let app = self.1.clone();
        Box::pin(async move {
            let payload: LambdaRequest =
                serde_json::from_value(event).map_err(|e| e.to_string())?;
            // lambda_http's adapter future is not Send: drive it on a
            // blocking thread of this runtime.
            let handle = tokio::runtime::Handle::current();
            let response = tokio::task::spawn_blocking(move || {
                handle.block_on(async move {
                    let mut adapter = Adapter::from(app);
                    let response = adapter
                        .ready()
                        .await
                        .map_err(|e| format!("{e:?}"))?
                        .call(LambdaEvent::new(payload, Context::default()))
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    serde_json::to_value(response).map_err(|e| e.to_string())
                })
            })
            .await
            .map_err(|e| e.to_string())??;
            lambda_events::answer(&response)
        })
    }
}

impl Target for InProcessLambda {
    fn auth(&self) -> Option<&TargetAuth> {
        self.1.as_ref()
    }
    fn replication_key(&self) -> Option<&str> {
        Some(twincell_contract::target::REPLICATION_KEY)
    }
    fn peer_signer(&self) -> Option<&twincell_replication::signing::Signer> {
        twincell_contract::target::PEER_SIGNER.as_ref()
    }
    fn name(&self) -> &str {
        self.0.name()
    }
    fn cell(&self) -> &str {
        CELL
    }
    fn peer(&self) -> &str {
        PEER
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async move {
            let auth = authenticator(self.1.as_ref()).await?;
            let replication = replication(self.1.as_ref().zip(auth.as_ref()));
            let session: Box<dyn Session> = Box::new(LambdaSession(
                self.0,
                twincell_aws::app_with(service(), replication, auth),
            ));
            Ok(session)
        })
    }
}
