//! Writing outputs while the model computes the next window.
//!
//! GIFTI encoding (gzip + base64) of a long run costs about as much CPU as the brain model, so
//! doing it inline would add its time to the run's. [`overlapped`] moves the consumer (the
//! writers) to its own thread behind a bounded channel: the producer (the model) keeps going
//! while earlier volumes are encoded, and at most `capacity` items wait in between, so memory
//! stays bounded whatever the run length. The first error on either side stops both and is
//! returned; the writer's own error wins over the "writer stopped" the producer then sees.

use std::sync::mpsc;

use crate::error::{Error, Result};

/// Run `produce`, handing each item it emits to `consume` on a second thread. Returns
/// `produce`'s value once every item has been consumed.
pub fn overlapped<T, R>(
    capacity: usize,
    mut consume: impl FnMut(T) -> Result<()> + Send,
    produce: impl FnOnce(&mut dyn FnMut(T) -> Result<()>) -> Result<R>,
) -> Result<R>
where
    T: Send,
{
    let (tx, rx) = mpsc::sync_channel::<T>(capacity.max(1));
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            for item in rx {
                consume(item)?;
            }
            Ok(())
        });
        let produced = {
            let mut send = |item: T| {
                tx.send(item)
                    .map_err(|_| Error::Other("the output writer stopped".into()))
            };
            produce(&mut send)
        };
        // Closing the channel is what ends the writer's loop.
        drop(tx);
        let written = match writer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, written) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
            (Ok(r), Ok(())) => Ok(r),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_arrives_in_order() {
        let mut got = Vec::new();
        let n = overlapped(
            2,
            |x: usize| {
                got.push(x);
                Ok(())
            },
            |send| {
                for i in 0..100 {
                    send(i)?;
                }
                Ok(100)
            },
        )
        .unwrap();
        assert_eq!(n, 100);
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_writer_error_stops_the_producer_and_is_the_one_reported() {
        let mut produced = 0;
        let e = overlapped(
            1,
            |x: usize| {
                if x == 3 {
                    Err(Error::Other("disk says no".into()))
                } else {
                    Ok(())
                }
            },
            |send| {
                for i in 0..1000 {
                    send(i)?;
                    produced += 1;
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("disk says no"), "{e}");
        assert!(produced < 1000, "the producer stopped early ({produced})");
    }

    #[test]
    fn a_producer_error_is_reported_after_the_writer_drains() {
        let mut got = 0;
        let e = overlapped(
            4,
            |_: usize| {
                got += 1;
                Ok(())
            },
            |send| -> Result<()> {
                send(1)?;
                send(2)?;
                Err(Error::Other("model failed".into()))
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("model failed"));
        assert_eq!(got, 2);
    }
}
