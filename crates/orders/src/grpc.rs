//! The gRPC edge: implements `orders.v1.OrderService`, translating proto <-> domain and `Error` -> `Status`.

use std::pin::Pin;

use api::{
    orders::v1::{
        self as pb, CreateOrderRequest, CreateOrderResponse, DeliverOrderRequest, DeliverOrderResponse,
        GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, OrderEventKind, ShipOrderRequest,
        ShipOrderResponse, WatchOrderRequest, WatchOrderResponse, order_service_server::OrderService,
    },
    rpc::{Request, Response, Status, async_trait},
};
use futures::{Stream, StreamExt};
use platform::{
    email::Email,
    status::{Failure, InvalidFields, Reason},
};

use crate::{
    config::PagingConfig,
    domain::{ListQuery, NewOrder, Orders},
    order::{Cents, Currency, Error, IdempotencyKey, Order, OrderEvent, OrderId, OrderStatus},
};

/// A stream of responses, as tonic wants it for server-streaming RPCs.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `orders.v1.OrderService` implementation.
pub struct OrderGrpc {
    orders: Orders,
    paging: PagingConfig,
}

impl OrderGrpc {
    /// Serves the given use cases with the given paging limits.
    pub fn new(orders: Orders, paging: PagingConfig) -> Self {
        Self { orders, paging }
    }

    fn list_query(&self, request: ListOrdersRequest) -> Result<ListQuery, Error> {
        let page_size = match u32::try_from(request.page_size) {
            Ok(0) => Ok(self.paging.default_page_size),
            Ok(size) if size <= self.paging.max_page_size => Ok(size),
            _ => Err(InvalidFields::one("page_size", format!("must be between 0 and {}", self.paging.max_page_size))),
        };
        let customer = match request.customer_email.as_str() {
            "" => Ok(None),
            email => parse_email("customer_email", email).map(Some),
        };
        match (page_size, customer) {
            (Ok(page_size), Ok(customer)) => {
                let page_token = Some(request.page_token).filter(|t| !t.is_empty());
                Ok(ListQuery { customer, page_size, page_token })
            }
            (page_size, customer) => Err(invalid_fields([page_size.err(), customer.err()])),
        }
    }
}

#[async_trait]
impl OrderService for OrderGrpc {
    type ListOrdersStream = ResponseStream<ListOrdersResponse>;
    type WatchOrderStream = ResponseStream<WatchOrderResponse>;

    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let new = NewOrder::try_from(request.into_inner())?;
        let order = self.orders.create(new).await?;
        Ok(Response::new(CreateOrderResponse { order: Some(order.into()) }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        let id = OrderId::parse_field(&request.get_ref().id, "id")?;
        let order = self.orders.get(id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(order.into()) }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<Self::ListOrdersStream>, Status> {
        let query = self.list_query(request.into_inner())?;
        let page = self.orders.list(query).await?;
        let last = page.orders.len().saturating_sub(1);
        let mut next_page_token = page.next_page_token;
        let messages: Vec<_> = page
            .orders
            .into_iter()
            .enumerate()
            .map(|(i, order)| {
                let token = if i == last { next_page_token.take() } else { None };
                Ok(ListOrdersResponse { order: Some(order.into()), next_page_token: token.unwrap_or_default() })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let id = OrderId::parse_field(&request.get_ref().order_id, "order_id")?;
        let events = self.orders.watch(id).await?;
        let stream = events
            .map(|event| event.map(|event| WatchOrderResponse { event: Some(event.into()) }).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ship_order(&self, request: Request<ShipOrderRequest>) -> Result<Response<ShipOrderResponse>, Status> {
        let id = OrderId::parse_field(&request.get_ref().id, "id")?;
        let order = self.orders.advance(id, OrderStatus::Shipped).await?;
        Ok(Response::new(ShipOrderResponse { order: Some(order.into()) }))
    }

    async fn deliver_order(
        &self,
        request: Request<DeliverOrderRequest>,
    ) -> Result<Response<DeliverOrderResponse>, Status> {
        let id = OrderId::parse_field(&request.get_ref().id, "id")?;
        let order = self.orders.advance(id, OrderStatus::Delivered).await?;
        Ok(Response::new(DeliverOrderResponse { order: Some(order.into()) }))
    }
}

/// The field errors of a request that has at least one.
fn invalid_fields<const N: usize>(errors: [Option<InvalidFields>; N]) -> Error {
    InvalidFields::all(errors)
        .map_or_else(|| Error::Internal(anyhow::anyhow!("a request failed without an error")), Error::from)
}

fn parse_email(field: &'static str, input: &str) -> Result<Email, InvalidFields> {
    Email::parse(input).map_err(|reason| InvalidFields::one(field, reason))
}

impl TryFrom<CreateOrderRequest> for NewOrder {
    type Error = Error;

    /// Every bad field is reported, not only the first.
    fn try_from(request: CreateOrderRequest) -> Result<Self, Error> {
        match (
            parse_email("customer_email", &request.customer_email),
            Cents::parse(request.total_cents),
            Currency::parse(&request.currency),
            IdempotencyKey::parse(&request.idempotency_key),
        ) {
            (Ok(customer), Ok(total), Ok(currency), Ok(idempotency_key)) => {
                Ok(NewOrder { customer, total, currency, idempotency_key })
            }
            (customer, total, currency, key) => {
                Err(invalid_fields([customer.err(), total.err(), currency.err(), key.err()]))
            }
        }
    }
}

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Created => Self::Created,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
        }
    }
}

impl From<OrderStatus> for OrderEventKind {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Created => Self::Created,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
        }
    }
}

impl From<Order> for pb::Order {
    fn from(order: Order) -> Self {
        pb::Order {
            id: order.id.to_string(),
            customer_email: order.customer.to_string(),
            total_cents: order.total.get(),
            currency: order.currency.code().to_owned(),
            created_at: Some(order.created_at.into()),
            status: pb::OrderStatus::from(order.status).into(),
        }
    }
}

impl From<OrderEvent> for pb::OrderEvent {
    fn from(event: OrderEvent) -> Self {
        pb::OrderEvent {
            order_id: event.order_id.to_string(),
            kind: OrderEventKind::from(event.reached).into(),
            occurred_at: Some(event.occurred_at.into()),
        }
    }
}

/// `google.rpc.ErrorInfo.domain` of every reason below: the proto package.
pub const ERROR_DOMAIN: &str = "orders.v1";
/// ALREADY_EXISTS: the idempotency key was first used for a different order request.
pub const IDEMPOTENCY_KEY_REUSED: Reason = Reason { reason: "IDEMPOTENCY_KEY_REUSED", domain: ERROR_DOMAIN };
/// FAILED_PRECONDITION: no user has the customer email; create the user first.
pub const CUSTOMER_NOT_FOUND: Reason = Reason { reason: "CUSTOMER_NOT_FOUND", domain: ERROR_DOMAIN };
/// FAILED_PRECONDITION: the order is not in the status this move starts from.
pub const WRONG_ORDER_STATUS: Reason = Reason { reason: "WRONG_ORDER_STATUS", domain: ERROR_DOMAIN };

/// One code per variant, through the shared mapper (`platform::status`), which adds
/// `BadRequest` field violations to INVALID_ARGUMENT and `ErrorInfo` to the refusals
/// a client branches on.
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let failure = match error {
            Error::InvalidArgument(fields) => Failure::from(fields),
            Error::NotFound => Failure::NotFound(message),
            Error::KeyReused(_) => Failure::AlreadyExists(IDEMPOTENCY_KEY_REUSED, message),
            Error::UnknownCustomer(_) => Failure::FailedPrecondition(CUSTOMER_NOT_FOUND, message),
            Error::WrongStatus { .. } => Failure::FailedPrecondition(WRONG_ORDER_STATUS, message),
            Error::UsersUnavailable(_) => Failure::Unavailable(message),
            Error::Unavailable(source) => {
                Failure::DependencyUnavailable { dependency: "database", detail: source.to_string() }
            }
            Error::Aborted(source) => Failure::DependencyAborted { dependency: "database", detail: source.to_string() },
            Error::Internal(source) => Failure::Internal(format!("{source:#}")),
        };
        Status::from(failure)
    }
}

#[cfg(test)]
mod tests {
    use api::rpc::Code;
    use tonic_types::StatusExt;

    use super::*;

    fn request(email: &str, cents: i64, currency: &str) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_email: email.into(),
            total_cents: cents,
            currency: currency.into(),
            idempotency_key: String::new(),
        }
    }

    /// Create requests with one invalid field each, and that field.
    fn each_invalid_create_field() -> [(CreateOrderRequest, &'static str); 3] {
        [
            (request("nope", 100, "USD"), "customer_email"),
            (request("a@example.com", 0, "USD"), "total_cents"),
            (request("a@example.com", 100, "DOLLARS"), "currency"),
        ]
    }

    #[test]
    fn each_invalid_create_field_is_invalid_argument_naming_it() {
        for (bad, field) in each_invalid_create_field() {
            let status = Status::from(NewOrder::try_from(bad).expect_err("invalid"));
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with(&format!("invalid {field}")), "{}", status.message());
        }
    }

    #[test]
    fn an_unknown_customer_is_failed_precondition_naming_the_email() {
        let status = Status::from(Error::UnknownCustomer(Email::parse("who@example.com").expect("valid")));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("who@example.com"));
    }

    /// The `(field, description)` pairs of a status's `google.rpc.BadRequest`.
    fn violations(status: &Status) -> Vec<(String, String)> {
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        bad_request.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect()
    }

    #[test]
    fn each_invalid_create_field_carries_a_field_violation_naming_it() {
        for (bad, field) in each_invalid_create_field() {
            let status = Status::from(NewOrder::try_from(bad).expect_err("invalid"));
            let fields: Vec<_> = violations(&status).into_iter().map(|(field, _)| field).collect();
            assert_eq!(fields, [field]);
        }
    }

    #[test]
    fn a_create_request_with_several_bad_fields_names_every_one() {
        let mut bad = request("nope", -1, "DOLLARS");
        bad.idempotency_key = "has space".into();
        let status = Status::from(NewOrder::try_from(bad).expect_err("invalid"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = violations(&status).into_iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["customer_email", "total_cents", "currency", "idempotency_key"]);
        for field in fields {
            assert!(status.message().contains(&format!("invalid {field}: ")), "{}", status.message());
        }
    }

    #[test]
    fn the_refusals_a_client_branches_on_carry_their_reason() {
        let who = Email::parse("who@example.com").expect("valid");
        for (error, code, reason) in [
            (Error::KeyReused("key-1".into()), Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED"),
            (Error::UnknownCustomer(who), Code::FailedPrecondition, "CUSTOMER_NOT_FOUND"),
            (
                Error::WrongStatus {
                    current: OrderStatus::Created,
                    required: OrderStatus::Shipped,
                    wanted: OrderStatus::Delivered,
                },
                Code::FailedPrecondition,
                "WRONG_ORDER_STATUS",
            ),
        ] {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            let details = status.get_error_details();
            let info = details.error_info().expect("an ErrorInfo detail");
            assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, "orders.v1"));
        }
    }

    #[test]
    fn a_megabyte_of_input_in_any_field_yields_a_short_message() {
        let huge = "X".repeat(1 << 20);
        let mut with_huge_key = request("a@example.com", 100, "USD");
        with_huge_key.idempotency_key = huge.clone();
        for bad in [request(&huge, 100, "USD"), request("a@example.com", 100, &huge), with_huge_key] {
            let status = Status::from(NewOrder::try_from(bad).expect_err("invalid"));
            assert!(status.message().len() < 200, "{} bytes", status.message().len());
            let (_, description) = violations(&status).pop().expect("one violation");
            assert!(description.len() < 200, "{} bytes", description.len());
        }
        // The key of a reused-key refusal is quoted briefly too, whatever its length.
        let status = Status::from(Error::KeyReused(huge));
        assert!(status.message().len() < 200, "{} bytes", status.message().len());
    }
}
