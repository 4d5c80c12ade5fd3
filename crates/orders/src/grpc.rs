//! The gRPC edge: implements `orders.v1.OrderService`, translating proto <-> domain and `Error` -> `Status`.

use std::pin::Pin;

use api::orders::v1::{
    self as pb, CreateOrderRequest, CreateOrderResponse, DeliverOrderRequest, DeliverOrderResponse, GetOrderRequest,
    GetOrderResponse, ListOrdersRequest, ListOrdersResponse, OrderEventKind, ShipOrderRequest, ShipOrderResponse,
    WatchOrderRequest, WatchOrderResponse, order_service_server::OrderService,
};
use futures::{Stream, StreamExt};
use platform::{email::Email, status};
use tonic::{Request, Response, Status};

use crate::{
    config::PagingConfig,
    domain::{ListQuery, NewOrder, Orders},
    order::{Cents, Currency, Error, IdempotencyKey, Order, OrderEvent, OrderStatus, parse_order_id},
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
            Ok(0) => self.paging.default_page_size,
            Ok(size) if size <= self.paging.max_page_size => size,
            _ => {
                let reason = format!("must be between 0 and {}", self.paging.max_page_size);
                return Err(Error::invalid("page_size", reason));
            }
        };
        let customer = match request.customer_email.as_str() {
            "" => None,
            email => Some(parse_email("customer_email", email)?),
        };
        let page_token = Some(request.page_token).filter(|t| !t.is_empty());
        Ok(ListQuery { customer, page_size, page_token })
    }
}

#[tonic::async_trait]
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
        let id = parse_order_id(&request.get_ref().id, "id")?;
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
        let id = parse_order_id(&request.get_ref().order_id, "order_id")?;
        let events = self.orders.watch(id).await?;
        let stream = events
            .map(|event| event.map(|event| WatchOrderResponse { event: Some(event.into()) }).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ship_order(&self, request: Request<ShipOrderRequest>) -> Result<Response<ShipOrderResponse>, Status> {
        let id = parse_order_id(&request.get_ref().id, "id")?;
        let order = self.orders.advance(id, OrderStatus::Shipped).await?;
        Ok(Response::new(ShipOrderResponse { order: Some(order.into()) }))
    }

    async fn deliver_order(
        &self,
        request: Request<DeliverOrderRequest>,
    ) -> Result<Response<DeliverOrderResponse>, Status> {
        let id = parse_order_id(&request.get_ref().id, "id")?;
        let order = self.orders.advance(id, OrderStatus::Delivered).await?;
        Ok(Response::new(DeliverOrderResponse { order: Some(order.into()) }))
    }
}

fn parse_email(field: &'static str, input: &str) -> Result<Email, Error> {
    Email::parse(input).map_err(|reason| Error::invalid(field, reason))
}

impl TryFrom<CreateOrderRequest> for NewOrder {
    type Error = Error;

    fn try_from(request: CreateOrderRequest) -> Result<Self, Error> {
        Ok(NewOrder {
            customer: parse_email("customer_email", &request.customer_email)?,
            total: Cents::parse(request.total_cents)?,
            currency: Currency::parse(&request.currency)?,
            idempotency_key: IdempotencyKey::parse(&request.idempotency_key)?,
        })
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

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            Error::NotFound => Status::not_found(error.to_string()),
            Error::KeyReused(_) => Status::already_exists(error.to_string()),
            Error::UnknownCustomer(_) | Error::WrongStatus { .. } => Status::failed_precondition(error.to_string()),
            Error::UsersUnavailable(_) => Status::unavailable(error.to_string()),
            Error::Unavailable(source) => status::unavailable("database", source),
            Error::Internal(source) => status::internal(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(email: &str, cents: i64, currency: &str) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_email: email.into(),
            total_cents: cents,
            currency: currency.into(),
            idempotency_key: String::new(),
        }
    }

    #[test]
    fn each_invalid_create_field_is_invalid_argument_naming_it() {
        for (bad, field) in [
            (request("nope", 100, "USD"), "customer_email"),
            (request("a@example.com", 0, "USD"), "total_cents"),
            (request("a@example.com", 100, "DOLLARS"), "currency"),
        ] {
            let status = Status::from(NewOrder::try_from(bad).expect_err("invalid"));
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(&format!("invalid {field}")), "{}", status.message());
        }
    }

    #[test]
    fn an_unknown_customer_is_failed_precondition_naming_the_email() {
        let status = Status::from(Error::UnknownCustomer(Email::parse("who@example.com").expect("valid")));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("who@example.com"));
    }
}
