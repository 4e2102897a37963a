//! The protobuf codec of every generated service: prost's, with a smaller
//! first encode buffer. tonic's default reserves 8 KiB per response body
//! up front and keeps it for the body's life; a `StreamCommands` stream
//! lives as long as its device waits, so at fleet size that buffer is a
//! large share of a waiting device's memory (see the `waiters` benchmark).
//! Our messages are small; a larger one grows the buffer as it needs.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First capacity of a response body's encode buffer.
const ENCODE_BUFFER: usize = 1024;
/// tonic's default: how much a body encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Named in `build.rs` (`codec_path`).
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}
